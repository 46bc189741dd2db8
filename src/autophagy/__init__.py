"""autophagy: self-consuming training loops for generative models, run and measured.

Reproduces Bertrand, Bose, Duplessis, Jiralerspong, Gidel, "On the Stability of Iterative
Retraining of Generative Models on their own Data" (ICLR 2024, arXiv:2310.00429).
"""

__version__ = "0.1.0"
