"""fanlog inside training frameworks that bring their own tracker hooks.

Import the module of the framework you use; each imports that framework, so
``import fanlog.integrations`` alone imports none:

* :mod:`fanlog.integrations.transformers`: ``FanlogCallback`` for ``transformers.Trainer``
  (``pip install 'fanlog[transformers]'``);
* :mod:`fanlog.integrations.accelerate`: ``FanlogTracker`` for ``accelerate.Accelerator``
  (``pip install 'fanlog[accelerate]'``).

The Lightning adapter is :mod:`fanlog.lightning`.
"""
