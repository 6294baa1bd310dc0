"""Callbacks for the trainers users train with, each importing its framework lazily.

- :mod:`dimlapse.capture.integrations.huggingface`: ``DimlapseCallback`` for
  ``transformers.Trainer`` (needs ``transformers``);
- :mod:`dimlapse.capture.integrations.lightning`: ``DimlapseCallback`` for
  ``lightning.Trainer`` (needs ``lightning``).

Both take a store, ``every``, a probe, ``attrs`` and a :class:`dimlapse.capture.CaptureOptions`
(``options=``), as the Recorder does. Importing this package imports neither framework:
``pip install 'dimlapse[integrations]'`` brings them.
"""

__all__: list[str] = []
