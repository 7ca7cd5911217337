"""The sparse GP: sparse points, design rows, the QR solve and posterior variances.

``selection`` chooses sparse points, ``sparse_set`` holds them with their K_MM factor, ``design``
builds the rows of K_NM for a block of frames, ``solver`` solves the regularised least-squares
problem by (streamed) QR and ``variance`` gives posterior variances of linear functionals.
"""
