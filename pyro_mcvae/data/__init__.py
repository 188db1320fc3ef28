"""Data sets: the Gaussian-copula benchmark, its heavy-tailed and non-Gaussian-copula variants (NumPy), PolyMNIST and
the bicycle assemblies (torch; generators, writers, loaders), MNIST; seeded missing-at-random
presence masks for incomplete data (:mod:`.missing`); your own components from ``.npz`` files and image
folders (:mod:`.component_files`). The facade is lazy: importing
one data module loads only what it needs."""

from .._lazy import lazy_exports

_EXPORTS = {
    "CopulaDataset": ".copula",
    "copula_correlation": ".copula", "copula_log_density": ".copula",
    "copula_spearman": ".copula",
    "make_copula_splits": ".copula",
    "sample_copula": ".copula",
    "BIKE_TYPES": ".bikes",
    "COMPONENTS": ".bikes",
    "BikeAssemblies": ".bikes",
    "BikeGeometry": ".bikes",
    "ComponentImages": ".bikes",
    "generate_bike_assemblies": ".bikes",
    "load_component_images": ".bikes",
    "make_bike_splits": ".bikes",
    "render_bikes": ".bikes",
    "sample_bike_geometry": ".bikes",
    "verify_bike_assemblies": ".bikes",
    "write_bike_assemblies": ".bikes",
    "HeavyTailDataset": ".heavy_tails",
    "make_heavy_tail_splits": ".heavy_tails",
    "sample_skew_t": ".heavy_tails",
    "NonGaussianDataset": ".nongaussian",
    "make_nongaussian_splits": ".nongaussian",
    "nongaussian_population": ".nongaussian",
    "sample_nongaussian": ".nongaussian",
    "absent_count_law": ".missing",
    "apply_mask": ".missing",
    "expected_absent_fraction": ".missing",
    "missing_mask": ".missing",
    "ComponentFiles": ".component_files",
    "read_component_files": ".component_files",
    "split_rows": ".component_files",
    "DataNotFoundError": ".mnist",
    "find_data_root": ".mnist",
    "load_mnist": ".mnist",
    "POLYMNIST_BACKGROUNDS": ".polymnist",
    "PolyMNISTData": ".polymnist",
    "composite_polymnist": ".polymnist",
    "generate_polymnist": ".polymnist",
    "generate_polymnist_arrays": ".polymnist",
    "load_backgrounds": ".polymnist",
    "load_polymnist": ".polymnist",
    "polymnist_to_float": ".polymnist",
    "verify_polymnist": ".polymnist",
    "write_polymnist": ".polymnist",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
