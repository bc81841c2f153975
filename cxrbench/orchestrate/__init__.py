"""Many runs at once: a protocol's grid (`sweep`) and the scheduler that packs runs onto devices (`packing`)."""
