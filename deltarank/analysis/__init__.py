"""The analysis layer: `maths` (pure functions on arrays), `engine` (the streaming spectrum run), `tools`
(intruders, similarity, extract) and `results` (the result files every command writes and reads)."""
