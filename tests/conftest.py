import os
import sys
import tempfile

# Keep the kernel cache of a test run to itself, unless the caller chose one.
os.environ.setdefault("JITNET_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jitnet-test-cache"))
# `from helpers import check` in every test folder (tests are imported with importlib mode).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
