"""The live front end and the contract below the model (see docs/architecture.md).

Importing it quiets the library lines `live.contract.cli.LIBRARY_NOISE` names, in every process
that uses the project (command lines, the page, benchmarks): each checkpoint load
otherwise prints torchao's CUDA-kernel load failures on a CPU machine.
"""
from live.contract.cli import quiet_library_noise

quiet_library_noise()
