"""The default sizes of the sampled measurements, shared by a study's `evaluate:` section
(`deltarank.study.design.evaluate_spec.EvaluateSpec`) and `deltarank evaluate --measure drift|diversity`, so that both
measure the same thing by default. Plain numbers: importing this module loads no model library."""

from __future__ import annotations

GENERAL_TOKENS = 128  # tokens (at most) of each base-model sample in the forgetting (KL) set
GENERAL_SAMPLES = 8  # samples per general prompt: 16 prompts × 8 = 128 sequences
HELD_OUT_SEQUENCES = 256  # sequences of a study's held-out set the loss is taken over
DIVERSITY_PROMPTS = 4  # prompts sampled for diversity
DIVERSITY_SAMPLES = 8  # samples per prompt
TEMPERATURE = 0.2  # sampling temperature of the diversity samples
TOP_P = 0.95  # nucleus-sampling threshold of the diversity samples
DIVERSITY_NEW_TOKENS = 64  # tokens per diversity sample
SEED = 0  # seed of the sampled measurements
