"""The table headers every command shares: one name per concept, in the terminal tables and the compare CSVs.

A row of a table covers the matrices of one module type (or, in the row `all`, every matrix): how many is
`matrices`; the width min(m, n) of their shape is `width` (as `rank_statistics` names it); the r₀.₉ of a Gaussian
matrix of the same shape (`MatrixSpectrum.random_energy_90`, the figures' "Gaussian r₀.₉") is `gauss_e90`.
"""

from __future__ import annotations

MATRICES = "matrices"  # how many matrices the row covers (a count, never a size)
WIDTH = "width"  # min(m, n) of the row's matrices
GAUSS_E90 = "gauss_e90"  # r₀.₉ of a Gaussian matrix of the row's shape, median over the row
