"""``python -m dimlapse <command>``: the same as the ``dimlapse`` command."""

from dimlapse.pipelines.cli import main

raise SystemExit(main())
