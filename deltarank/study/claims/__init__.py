"""The reference studies' claims, checked from study.json alone: which apply (`reference`), Biderman et al.
2024 (`biderman`, `learns_less_forgets_less`), BELLE (`belle`), verdict wording (`verdicts`) and the statistics
behind them (`statistics`: seed groups, intervals, differences within noise)."""
