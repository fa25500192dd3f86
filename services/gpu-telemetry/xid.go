package gputelemetry

import "fmt"

// applicationXids are Xid errors caused by the application, not the GPU; the
// same set dcgm and the Kubernetes device plugin ignore for device health:
// 13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped
// processing, 45 preemptive cleanup, 68 video processor exception, 109 context
// switch timeout.
var applicationXids = map[uint64]bool{13: true, 31: true, 43: true, 45: true, 68: true, 109: true}

// xidDescriptions names the critical Xids operators meet most often (from
// NVIDIA's Xid catalogue); others are reported by number only.
var xidDescriptions = map[uint64]string{
	48:  "double-bit ECC error",
	61:  "internal micro-controller breakpoint/warning",
	62:  "internal micro-controller halt",
	63:  "ECC page retirement or row remapping recording event",
	64:  "ECC page retirement or row remapper recording failure",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	94:  "contained ECC error",
	95:  "uncontained ECC error",
	119: "GSP RPC timeout",
	120: "GSP error",
}

// xidMakesUnhealthy reports whether a critical Xid means the GPU should no
// longer receive work.
func xidMakesUnhealthy(xid uint64) bool { return !applicationXids[xid] }

// xidReason is the health reason published for a critical Xid.
func xidReason(xid uint64) string {
	if d, ok := xidDescriptions[xid]; ok {
		return fmt.Sprintf("Xid %d: %s", xid, d)
	}
	return fmt.Sprintf("Xid %d: critical error", xid)
}
