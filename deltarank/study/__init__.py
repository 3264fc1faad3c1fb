"""`deltarank study`: a grid of training runs, each evaluated (learning, forgetting, diversity, cost, ΔW ranks),
written as one table (study.json, study.csv), figures and a report; resumable, and runnable side by side.

spec (the study file, its runs and their names) -> runner (train, measure, write) -> store (study.json, csv);
executors run the runs one after another, in local processes or on Ray; evaluation, diversity and statistics
measure and summarise them; report and deltarank.figures.study draw the conclusions from study.json alone.
"""
