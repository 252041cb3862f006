"""What the CPU offers beyond the basics (read from /proc/cpuinfo; no TensorFlow import)."""

# The flags that decide how fast TensorFlow's CPU kernels run here, in the order they are reported.
VECTOR_EXTENSIONS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16')


def cpu_flags():
    """The set of flags /proc/cpuinfo lists for the first CPU (empty where it cannot be read)."""
    try:
        with open('/proc/cpuinfo') as stream:
            return set(next((line.split(':', 1)[1].split() for line in stream if line.startswith('flags')), []))
    except OSError:
        return set()


def vector_extensions():
    """The VECTOR_EXTENSIONS this CPU has, e.g. ['avx2', 'fma'] on a CPU without AVX-512."""
    flags = cpu_flags()
    return [name for name in VECTOR_EXTENSIONS if name in flags]


def cpu_has_bfloat16():
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    return bool({'avx512_bf16', 'amx_bf16'} & cpu_flags())
