# SPDX-License-Identifier: Apache-2.0
"""The GPU check's DLPack round trip with the PyTorch found on the machine.

A CUDA tensor of PyTorch goes into gpulife (borrowed, no copy), gpulife copies it into a tensor
of its own and lends that back to PyTorch; the values must match, and once both sides dropped
their handles each memory must have been given back exactly once: PyTorch's deleter called once
by gpulife, gpulife's called once by PyTorch, and no gpulife tensor left alive. Exit status 0
when all held, 1 when one did not, 77 when PyTorch or a CUDA device is missing (skipped).

usage: python3 dlpack_torch.py <path of libgpulife_dlpack_shim.so>
"""
import ctypes
import gc
import sys


def main() -> int:
    try:
        import torch
        import torch.utils.dlpack as tud
    except ImportError as e:
        print(f"skipped: no PyTorch here ({e})")
        return 77
    if not torch.cuda.is_available():
        print(f"skipped: PyTorch {torch.__version__} sees no CUDA device")
        return 77
    shim = ctypes.CDLL(sys.argv[1])
    shim.gpulife_shim_round_trip.restype = ctypes.c_void_p
    shim.gpulife_shim_round_trip.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    set_name = ctypes.pythonapi.PyCapsule_SetName
    set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    if shim.gpulife_shim_init() != 0:
        print("FAIL: gpulife could not make its context")
        return 1
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")

    stream = torch.cuda.current_stream()
    x = torch.arange(1 << 20, dtype=torch.float32, device="cuda") * 0.5
    expected = x.clone()
    capsule = tud.to_dlpack(x)
    managed = get_pointer(capsule, b"dltensor")
    set_name(capsule, b"used_dltensor")  # consumed: PyTorch must not delete it again
    lent = shim.gpulife_shim_round_trip(managed, stream.cuda_stream)
    if not lent:
        print("FAIL: gpulife refused the tensor")
        return 1
    y = tud.from_dlpack(new_capsule(lent, b"dltensor", None))
    ok = True
    if not torch.equal(y, expected):
        print("FAIL: the round trip changed the values")
        ok = False
    if y.data_ptr() == x.data_ptr():
        print("FAIL: the copy came back as PyTorch's own memory")
        ok = False
    del x, capsule, y
    gc.collect()
    torch.cuda.synchronize()
    producer, exported, live = ctypes.c_int(), ctypes.c_int(), ctypes.c_long()
    shim.gpulife_shim_counts(ctypes.byref(producer), ctypes.byref(exported), ctypes.byref(live), 1)
    print(f"PyTorch's deleter called {producer.value} time(s), gpulife's {exported.value}, "
          f"gpulife tensors alive {live.value}")
    if producer.value != 1 or exported.value != 1 or live.value != 0:
        print("FAIL: memory not given back exactly once")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
