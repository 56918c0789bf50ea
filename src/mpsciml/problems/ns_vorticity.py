"""2-D Navier-Stokes in vorticity form on the periodic unit square (Li et al. 2021): the map from
the vorticity at one time to the vorticity at a later time.

    w_t + u . grad w = nu Laplacian w + f,   div u = 0,   w = curl u,
    f = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)),   nu = 1e-3,

initial vorticity from a Gaussian random field. Data from our dealiased pseudo-spectral
Crank-Nicolson solver (`data.ns_vorticity`; which two times, and every other generator option,
are keys of `problem.generator`, `NSVorticityParams`). Samples at x_i = i / r (grid layout
"periodic"). 64x64 by default so it trains on a laptop CPU; `problem.resolution=128` is the
size of Tu et al.'s experiments, with the zero-shot grid set by `problem.zero_shot_resolution`.
"""

from __future__ import annotations

from mpsciml.data.ns_vorticity import NSVorticityParams, ns_dataset
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem
from mpsciml.problems.operator import as_tensor


class NSVorticity(GridOperatorProblem):
    input_names = ("w0",)
    output_names = ("w",)
    coordinate_names = ("x", "y")
    grid_layout = "periodic"
    params_class = NSVorticityParams
    params: NSVorticityParams

    def generate(self, n: int, resolution: int, seed: int) -> GridData:
        arrays = ns_dataset(n, seed, resolution, self.params)
        return GridData(
            as_tensor(arrays["initial"]).unsqueeze(1), as_tensor(arrays["final"]).unsqueeze(1)
        )
