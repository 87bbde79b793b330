// A qemu TCG plugin: how often each translated block of guest code ran, and its instructions.
//
// Loaded by `qatie-compile estimate` (compile/offline/estimate.py) into qemu-aarch64 as
// `-plugin block_profile.so,out=FILE`. Each translated block gets an inline counter (qemu adds
// to it in the generated code, no callback per execution); at exit every block that ran is
// written as one line: its guest address, its execution count and each instruction's bytes in
// hex, in memory order (4 per aarch64 instruction, 1 to 15 per x86 one).
// The host maps addresses to the kernels of the loaded library and estimates cycles per block
// with llvm-mca; qemu's timing says nothing about a phone, its instruction stream does.
//
// qemu ships no plugin headers in Debian's qemu-user; the declarations below are the few this
// plugin uses, from QEMU's plugin API version 1 (qemu 4.2 to 8.x: docs/devel/tcg-plugins.rst,
// include/qemu/qemu-plugin.h). A block translated twice (qemu flushed its cache) has two
// counters and two lines; the host adds lines of the same address and bytes.
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

enum { MAX_INSN_BYTES = 16 };

struct block {
  uint64_t count;  // first: the inline add targets this address
  uint64_t vaddr;
  size_t n_insns;
  struct block *next;
  struct {
    uint8_t size;
    uint8_t bytes[MAX_INSN_BYTES];
  } insns[];
};

static struct block *blocks;  // translation is serialized in qemu-user (mmap_lock)
static char out_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  const size_t n = qemu_plugin_tb_n_insns(tb);
  struct block *block = calloc(1, sizeof(struct block) + n * sizeof(block->insns[0]));
  if (!block) abort();
  block->vaddr = qemu_plugin_tb_vaddr(tb);
  block->n_insns = n;
  for (size_t i = 0; i < n; ++i) {
    const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    const size_t size = qemu_plugin_insn_size(insn);
    block->insns[i].size = size < MAX_INSN_BYTES ? (uint8_t)size : MAX_INSN_BYTES;
    memcpy(block->insns[i].bytes, qemu_plugin_insn_data(insn), block->insns[i].size);
  }
  block->next = blocks;
  blocks = block;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &block->count, 1);
}

static void write_blocks(qemu_plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  FILE *out = fopen(out_path, "w");
  if (!out) {
    perror(out_path);
    return;
  }
  for (const struct block *block = blocks; block; block = block->next) {
    if (!block->count) continue;
    fprintf(out, "%" PRIx64 " %" PRIu64, block->vaddr, block->count);
    for (size_t i = 0; i < block->n_insns; ++i) {
      fputc(' ', out);
      for (size_t b = 0; b < block->insns[i].size; ++b) fprintf(out, "%02x", block->insns[i].bytes[b]);
    }
    fputc('\n', out);
  }
  fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; ++i) {
    if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof(out_path), "%s", argv[i] + 4);
  }
  if (!out_path[0]) {
    fprintf(stderr, "block_profile: pass out=FILE\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, write_blocks, NULL);
  return 0;
}
