import os

# Tests run on the CPU whatever the machine has, so results and compile
# behaviour match CI.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
