from ._dimensionality import dimensionality
from ._metrics import SPECTRAL_METRICS, DegenerateSpectrumWarning
from ._run import Run, open_run
from ._spectra import blas_single_thread, singular_values, spectra
from ._twonn import twonn
