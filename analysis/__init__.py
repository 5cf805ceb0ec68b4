"""Run directories -> the papers' figures and tables.

``collect`` (runs -> DataFrames, or the W&B API), one script per figure/table (``fig1``,
``fig6``, ``fig7``, ``singd_table1``, ``singd_fig5``, ``singd_fig8``, ``singd_tables23``,
``rkfac_table1``, ``rkfac_fig2``, ``rkfac_spectrum``), ``figures`` (rebuild everything), and
the shared pieces ``curves``, ``summaries``, ``structures``, ``outputs``, ``style``.
"""
