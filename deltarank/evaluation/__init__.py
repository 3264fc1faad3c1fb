"""Every measurement of a model, shared by `deltarank evaluate`, the study and the reproduction: models loaded
for evaluation (`models`), held-out loss (`loss`), exact-match accuracy (`accuracy`), general-text drift, i.e.
forgetting (`drift`), generation (`generate`), diversity (`diversity`), HumanEval completions checked in a
bubblewrap sandbox (`tasks`, `verdict`, `sandbox`, `completions`, `pass_at_k`), and the `evaluate` request
(`run`)."""
