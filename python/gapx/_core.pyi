import numpy as np

__version__: str
has_openmp: bool

class NeighborList:
    @property
    def cutoff(self) -> float: ...
    @property
    def n_pairs(self) -> int: ...
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

def build_neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: tuple[bool, bool, bool],
    cutoff: float,
    n_threads: int = 0,
    *,
    max_bytes: int = 0,
) -> NeighborList: ...

class PowerSpectrum:
    def __init__(
        self,
        *,
        cutoff: float,
        n_max: int,
        l_max: int,
        atom_sigma: float,
        transition_width: float,
        central_weight: float,
        species: list[int],
        radial_basis: str = "gto",
    ) -> None: ...
    @property
    def n_features(self) -> int: ...
    def compute(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        pbc: tuple[bool, bool, bool],
        numbers: np.ndarray,
        *,
        n_threads: int = 0,
        neighbors: NeighborList | None = None,
        max_bytes: int = 0,
    ) -> np.ndarray: ...
    def compute_gradients(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        pbc: tuple[bool, bool, bool],
        numbers: np.ndarray,
        *,
        n_threads: int = 0,
        neighbors: NeighborList | None = None,
        max_bytes: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
    def backpropagate(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        pbc: tuple[bool, bool, bool],
        numbers: np.ndarray,
        dE_dX: np.ndarray,
        *,
        n_threads: int = 0,
        neighbors: NeighborList | None = None,
        max_bytes: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def radial_spline(self, distances: list[float]) -> tuple[np.ndarray, np.ndarray]: ...
    def radial_values(self, distances: list[float]) -> tuple[np.ndarray, np.ndarray]: ...
    def radial_exact(self, distances: list[float]) -> tuple[np.ndarray, np.ndarray]: ...
    def radial_orthonormalisation(self) -> np.ndarray: ...

def spherical_harmonics(l_max: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
