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

MODEL_FORMAT_VERSION: int
OVERLAP_DISTANCE: float

class Model:
    def __init__(self, header: str, arrays: dict[str, np.ndarray]) -> None: ...
    @staticmethod
    def read(path: str) -> Model: ...
    @property
    def species(self) -> list[int]: ...
    @property
    def n_terms(self) -> int: ...
    @property
    def max_cutoff(self) -> float: ...
    @property
    def cutoffs(self) -> list[float]: ...
    @property
    def has_baseline(self) -> bool: ...
    def compute(
        self,
        numbers: list[int],
        neighbors: list[NeighborList],
        *,
        n_centers: int = -1,
        per_atom_virial: bool = False,
        n_threads: int = 0,
    ) -> tuple: ...
    def compute_from_list(
        self,
        numbers: list[int],
        neighbors: NeighborList,
        *,
        n_centers: int = -1,
        per_atom_virial: bool = False,
        n_threads: int = 0,
    ) -> tuple: ...
