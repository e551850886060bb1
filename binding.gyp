{
  "targets": [
    {
      "target_name": "ambit_net",
      "sources": ["shared/native/ambit_net.c"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
