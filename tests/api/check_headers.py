#!/usr/bin/env python3
"""Checks the conventions of gpukit's public headers that bindings and compiled programs rely on.

  1. Every public struct starts with `size_t size;` (sized struct), unless it is listed below in
     EXCEPTIONS with its reason.
  2. No sized struct is embedded by value in another public struct (its growth would move the
     outer struct's later fields): a pointer is used instead.
  3. Every public function returns int, void, a pointer, or one of VALUE_TYPES.
  4. Every function that fills a caller's sized struct takes a trailing `size_t size` and has a
     macro of the same name that passes sizeof; every `_default` function is such a function.

Usage: check_headers.py INCLUDE_DIR. Prints every violation and exits 1 when there is one.
"""
import os
import re
import sys

# Structs without a size field, each with the reason its layout can never change.
EXCEPTIONS = {
    "gk_logger": "a small value type embedded in every config; frozen",
    "gk_pool_stat": "the element of gk_pool_stats' arrays; frozen",
    "gk_trace_event": "the element of a trace's event array; frozen",
    "gk_trace": "allocated only by the library and read through a pointer",
    "gk_metric_point": "the element of gk_metrics_log_points' array; frozen",
    "gk_series_point": "the element of gk_monitor_read's array; frozen",
    "gk_recording_device": "the element of gk_recording_meta.devices; frozen",
    "gk_cpu_times": "embedded in gk_host_sample (per CPU); frozen",
    "gk_fs_stat": "the element of gk_host_sample.fs; frozen",
    "gk_disk_stat": "the element of gk_host_sample.disks; frozen",
    "gk_net_stat": "the element of gk_host_sample.nets; frozen",
    "gk_mig_instance": "the element of gk_gpu_sample.mig; frozen",
    "gk_gpu_process": "the element of gk_gpu_sample.processes; frozen",
    "gk_nvml_error_stat": "the element of gk_nvml_error_stats' array; frozen",
    "gk_option_info": "a row of the library's static settings table, read through a pointer",
}

# Return types other than int, void and pointers that public functions may use.
VALUE_TYPES = {
    "size_t", "uint64_t", "uint32_t", "int64_t", "unsigned", "unsigned long", "long", "double",
    "gk_alert_state", "gk_metrics_format", "gk_log_level",
}

# Functions that write single fields of a caller's sized struct by name, each checking the
# caller's size field first; they take no size parameter.
FIELD_WRITERS = {
    "gk_pool_config_set", "gk_pool_config_parse", "gk_options_set", "gk_options_from_env",
    "gk_logger_from_env",
}


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def join_continuations(text):
    return re.sub(r"\\\n", " ", text)


def strip_directives(text):
    return re.sub(r"(?m)^\s*#.*$", " ", text)


def structs(text):
    """(name, body) of every `typedef struct NAME { ... } NAME;`."""
    out = []
    for m in re.finditer(r"typedef struct (\w+) \{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append((m.group(1), text[m.end():i - 1]))
    return out


def functions(text):
    """(return type, name, parameters) of every GK_API declaration."""
    out = []
    for m in re.finditer(r"GK_API\s+([^;{]*?)\(\s*(\w+)\s*\)?\s*\(([^;]*?)\)\s*(?:GK_DEPRECATED\([^)]*\)\s*)?;", text, re.S):
        ret, name, params = m.group(1), m.group(2), m.group(3)
        out.append((" ".join(ret.split()), name, " ".join(params.split())))
    for m in re.finditer(r"GK_API\s+([^;(]*?)\b(\w+)\s*\(([^;]*?)\)\s*(?:GK_DEPRECATED\([^)]*\)\s*)?(?:__attribute__\S*\s*)?;", text, re.S):
        ret, name, params = m.group(1), m.group(2), m.group(3)
        if any(f[1] == name for f in out):
            continue
        out.append((" ".join(ret.split()), name, " ".join(params.split())))
    return out


def main():
    inc = sys.argv[1] if len(sys.argv) > 1 else "include/gpukit"
    problems = []
    texts = {}
    for name in sorted(os.listdir(inc)):
        if name.endswith(".h"):
            with open(os.path.join(inc, name)) as f:
                texts[name] = f.read()
    sized, all_structs = set(), {}
    for hdr, raw in texts.items():
        text = strip_comments(join_continuations(raw))
        for name, body in structs(text):
            all_structs[name] = (hdr, body)
            first = body.strip().split(";")[0].strip() if body.strip() else ""
            if first == "size_t size":
                sized.add(name)
                if name in EXCEPTIONS:
                    problems.append(f"{hdr}: {name} is sized but listed as an exception")
            elif name not in EXCEPTIONS:
                problems.append(f"{hdr}: struct {name} does not start with `size_t size;` "
                                "(add it, or list the struct in EXCEPTIONS with its reason)")
    for name in EXCEPTIONS:
        if name not in all_structs:
            problems.append(f"EXCEPTIONS names {name}, which no public header defines")
    for name, (hdr, body) in all_structs.items():
        for member in body.split(";"):
            words = member.split()
            if len(words) >= 2 and words[0] in sized and "*" not in member:
                problems.append(f"{hdr}: {name} embeds the sized struct {words[0]} by value "
                                "(use a pointer: its growth would move the fields after it)")
    nfuncs = 0
    for hdr, raw in texts.items():
        text = join_continuations(raw)
        macros = set(re.findall(r"#define (gk_\w+)\(", text))
        for ret, name, params in functions(strip_directives(strip_comments(text))):
            nfuncs += 1
            ret_plain = ret.replace("const ", "").strip()
            if not (ret_plain in ("int", "void") or "*" in ret or ret_plain in VALUE_TYPES):
                problems.append(f"{hdr}: {name} returns `{ret}` (use int, void, a pointer or a "
                                "listed value type)")
            plist = [p.strip() for p in params.split(",")] if params.strip() not in ("", "void") else []
            fills = [p for p in plist
                     if re.match(r"(\w+)\s*\*", p) and re.match(r"(\w+)", p).group(1) in sized]
            takes_size = bool(plist) and plist[-1] == "size_t size" and bool(fills)
            if name.endswith("_default") and fills and not takes_size:
                problems.append(f"{hdr}: {name} fills a config but takes no trailing size_t size")
            if fills and not takes_size and name not in FIELD_WRITERS and not name.endswith("_from_env"):
                problems.append(f"{hdr}: {name} writes into {fills[0].split()[0]} but takes no "
                                "trailing size_t size")
            if takes_size and name not in macros:
                problems.append(f"{hdr}: {name} takes a size but has no macro passing sizeof")
    for p in problems:
        print(p)
    print(f"{len(all_structs)} structs ({len(sized)} sized, {len(EXCEPTIONS)} exceptions), "
          f"{nfuncs} functions: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
