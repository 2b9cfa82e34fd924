"""Training code (torch; the optional ``[train]`` extra). Nothing at run time imports it:
the shipped models are ONNX files run by onnxruntime (``refacex.recover``, ...).

* ``recovery_data``: training pairs for the learned recovery (original face, the same
  face anonymised and sent through the channel), from the training people only.
* ``recovery``: the learned face code and detached recovery network, their training
  loop and ONNX export.
"""
