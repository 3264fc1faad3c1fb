"""`deltarank study`: a grid of training runs, each evaluated once (learning, forgetting, diversity, cost, ΔW
ranks and spectra), written as one table (study.json, study.csv), figures and a report; resumable, and runnable
side by side. `deltarank reproduce` is its preset `quick`.

    design/   the study file, presets, grid, evaluate:, checks        (nothing runs)
    run/      runner, study directory, run states, dry-run plan, executors
    measure/  measurements of the base and each run, measurement.json, kept spectra, subspace
    claims/   the reference studies' claims and their statistics     (from study.json alone)
    report/   study.json/csv, report.md, summary.json, figures       (views of the measurements)

Layers inside: run -> report -> claims | measure -> design.
"""
