// What our programs over a peer runtime's C API (ort_run.c, litert_run.c) share: reading the
// input file, and writing the process's memory map, which the block-profile plugin's addresses
// are placed in (compile/offline/arm64_peers.py compiles each program with this folder on its
// include path).
#ifndef QATIE_PEER_RUN_H
#define QATIE_PEER_RUN_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static void *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(1);
  }
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  void *data = malloc(*size ? *size : 1);
  if (!data || fread(data, 1, *size, f) != *size) exit(1);
  fclose(f);
  return data;
}

// /proc/self/maps (qemu's guest view) copied to `path`; 0 on success.
static int write_maps(const char *path) {
  FILE *maps = fopen("/proc/self/maps", "r"), *out = fopen(path, "w");
  if (!maps || !out) return 1;
  char line[4096];
  while (fgets(line, sizeof line, maps)) fputs(line, out);
  fclose(maps);
  return fclose(out) != 0;
}

#endif
