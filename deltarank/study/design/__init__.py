"""What a study is, before anything runs: the study file and its presets (`study_file`), the grid of runs and
their names (`grid`), the parsed study (`study`: Study, RunSpec), what to measure (`evaluate_spec`), held-out
splits of training files (`held_out_split`), the input checks (`checks`), what is not measured (`coverage`) and
the reproduction preset (`reproduction`, `reproduce_preset`)."""
