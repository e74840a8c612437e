from model.train.cli import main

raise SystemExit(main())
