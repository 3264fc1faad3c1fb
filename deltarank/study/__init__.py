"""`deltarank study`: a grid of training runs, each evaluated (learning, forgetting, diversity, cost, ΔW ranks),
written as one table (study.json, study.csv), figures and a report; resumable, and runnable side by side.

Reading: study_file (a study file, the presets) -> grid (its runs and their names) -> spec (RunSpec, Study).
Running: runner (train, measure, write) with directory (DIR/study.yaml), planning (the --dry-run plan),
measurements (the measurement.json files), store (study.json, study.csv), executors (the runs one after another,
in local processes or on Ray) and reproduction (a study that is `deltarank reproduce`).
Measuring: evaluate_spec (the study file's evaluate:), evaluation, diversity and statistics.
Concluding, from study.json alone: report, claims (claims_biderman, claims_belle, learns_less_forgets_less,
verdicts) and deltarank.figures.study.
"""
