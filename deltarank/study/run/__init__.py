"""Running a study: `runner` (train, measure, write), the study directory (`directory`), each run's state
(`run_state`), the `--dry-run` plan (`planning`), the executors (one after another, local processes, Ray) and
the progress lines (`console`)."""
