"""``python -m dimlapse.pipelines <command>``: the same as the ``dimlapse`` command."""

from .cli import main

raise SystemExit(main())
