import os
import sys

# `from simhelpers import ...` in this folder (tests are imported with importlib mode).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
