"""A study's outputs, all views of its measurements: study.json and study.csv (`study_json`), report.md
(`markdown`), a reproduction's summary.json (`summary`) and the figures of the spectra it kept (`figures`)."""
