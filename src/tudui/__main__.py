from tudui.cli import main

raise SystemExit(main())
