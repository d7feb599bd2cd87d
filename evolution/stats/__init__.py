"""The statistics: drift (binning, PSI, KL, chi-squared, Benjamini-Hochberg) and the canary's mSPRT and sample-size plan; pure numpy/scipy.
May import errors only.
"""
