"""The control room: argument parsing, run set-up, the shared training loop and the objectives it optimises.

Imports run downwards only: scripts -> engine -> methods (distiller_zoo, crd, online), models, dataset -> helper.
"""
