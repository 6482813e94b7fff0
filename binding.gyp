{
  "targets": [
    {
      "target_name": "ocisnap_sys",
      "sources": ["native/ocisnap_sys.c", "native/napi-util.c", "native/btrfs.c", "native/zstd.c", "native/tree.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "libraries": ["-lzstd"]
    }
  ]
}
