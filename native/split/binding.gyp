{
  "targets": [
    {
      "target_name": "shardline_split",
      "sources": ["src/addon.cc", "src/json_line.cc", "src/crc32c.cc"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-exceptions", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-rtti"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["-O3", "-std=c++17"]
      }
    }
  ]
}
