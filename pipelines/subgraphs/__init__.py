"""Reusable sub-graphs: Python functions that add tasks to the pipeline being built.

kfp.local cannot run a nested pipeline that takes an artifact input, so sub-graphs
are plain functions, not ``@dsl.pipeline``s.
"""
