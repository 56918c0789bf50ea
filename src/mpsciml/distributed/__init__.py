"""Data-parallel training: loss integrity (`integrity`), synchronised BatchNorm on CPUs
(`sync_batchnorm`), low-precision gradient communication (`comm_hooks`) and the launch plumbing.

Nothing is imported here, so `import mpsciml.distributed.integrity` costs no more than it needs.
"""
