from ._dimensionality import dimensionality
from ._metrics import SPECTRAL_METRICS, DegenerateSpectrumWarning
from ._spectra import singular_values, spectra
from ._twonn import twonn
