"""``python -m dimlapse.pipelines <command>``; see :mod:`dimlapse.pipelines._cli`."""

from ._cli import main

raise SystemExit(main())
