from rmsnorm_lab.cli import main

raise SystemExit(main())
