# The launch check first, before torch and the model code are imported: under
# `accelerate launch` a launch that cannot fit the machine is refused in milliseconds.
from model.train.launch_check import precheck

precheck()

from model.train.cli import main  # noqa: E402

raise SystemExit(main())
