"""Generation-based evaluation: answers to held-out prompts (zh-sentiment accuracy, HumanEval completions
checked in a sandboxed process), and held-out loss on any data spec (`deltarank evaluate`)."""
