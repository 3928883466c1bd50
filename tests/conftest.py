import os
import tempfile

# Keep the kernel cache of a test run to itself, unless the caller chose one.
os.environ.setdefault("JITNET_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jitnet-test-cache"))
