"""What the CPU offers beyond the basics (read from /proc/cpuinfo; no TensorFlow import)."""


def cpu_has_bfloat16():
    """True when /proc/cpuinfo lists native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        with open('/proc/cpuinfo') as stream:
            flags = next((line.split(':', 1)[1].split() for line in stream if line.startswith('flags')), [])
    except OSError:
        return False
    return bool({'avx512_bf16', 'amx_bf16'} & set(flags))
