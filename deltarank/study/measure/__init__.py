"""What a study measures on the base model and each run (`run_measures`: learning, forgetting, diversity, cost,
ranks), the measurement.json files (`measurement_file`), the spectra it keeps (`spectra`) and the subspace
measurements of pairs of runs (`subspace`)."""
