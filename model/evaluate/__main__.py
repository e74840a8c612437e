from model.evaluate.cli import main

raise SystemExit(main())
