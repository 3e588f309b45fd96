from flashsh.cli import main

raise SystemExit(main())
