"""Generation-based evaluation: answers to held-out prompts (zh-sentiment accuracy, HumanEval completions
checked with the test in a trusted process and the completion in a bubblewrap sandbox, or given completions
scored with pass@k), and held-out loss on any data spec (`deltarank evaluate`)."""
