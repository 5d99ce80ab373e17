"""Inference backends sharing one small interface.

A backend exposes ``input_name``, ``input_shape``, ``input_dtype`` (numpy dtype name),
``output_names``, ``output_shapes`` (dims may be None / strings when dynamic), ``provider`` (a
short description of what runs it), ``max_batch`` (the largest batch one ``run`` takes, None
when unlimited), ``run(batch) -> {output name: array}`` and ``close()`` (also a context manager).
"""
