package client

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	"github.com/nlocalmodels/orchestrator/pkg/natstest"
	"github.com/nlocalmodels/orchestrator/pkg/selection"
)

// fakeSelector answers like the selector service: by task_category.
func fakeSelector(req micro.Request) {
	var r selection.Request
	_ = json.Unmarshal(req.Data(), &r)
	switch r.TaskCategory {
	case "code":
		data, _ := json.Marshal(selection.Reply{ModelID: "m1", EventID: "e1", TaskCategory: "code", GPU: &selection.GPURef{Host: "a", Index: 1}})
		_ = req.Respond(data)
	case "slow":
		time.Sleep(300 * time.Millisecond)
	case "garbage":
		_ = req.Respond([]byte("{not json"))
	case "null":
		_ = req.Respond([]byte("null"))
	case "empty":
		_ = req.Respond([]byte("{}"))
	case "bad":
		_ = req.Error(bus.CodeBadRequest, "task_category is empty", nil)
	case "unknown":
		_ = req.Error(bus.CodeNotFound, `unknown task category: "unknown"`, nil)
	case "impossible":
		body, _ := json.Marshal(map[string]any{"error": "no candidate", "no_candidate": selection.NoCandidateError{TaskCategory: "impossible", Models: 3, ModelRejects: map[string]int{"max_gpu_memory_mb": 3}}})
		_ = req.Error(bus.CodeUnprocessable, "no candidate", body)
	case "warming":
		_ = req.Error(bus.CodeNotReady, "not ready", nil)
	default:
		_ = req.Error("418", "teapot", nil)
	}
}

func TestSelect(t *testing.T) {
	_, nc := natstest.Start(t)
	svc, err := micro.AddService(nc, micro.Config{Name: "selector", Version: "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: bus.SelectSubject, Handler: micro.HandlerFunc(fakeSelector)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	c := New(nc, WithTimeout(100*time.Millisecond))
	tests := []struct {
		category string
		want     error
		code     string
	}{
		{"code", nil, ""},
		{"bad", ErrBadRequest, "400"},
		{"unknown", ErrNotFound, "404"},
		{"impossible", ErrNoCandidate, "422"},
		{"warming", ErrNotReady, "503"},
		{"teapot", ErrInternal, "418"},
		{"garbage", ErrBadReply, ""},
		{"null", ErrBadReply, ""},
		{"empty", ErrBadReply, ""},
		{"slow", ErrTimeout, ""}, // last: the handler is serial and stays busy
	}
	for _, tt := range tests {
		t.Run(tt.category, func(t *testing.T) {
			rep, err := c.Select(context.Background(), selection.Request{TaskCategory: tt.category})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == nil && (rep.ModelID != "m1" || rep.GPU.Index != 1) {
				t.Fatalf("reply %+v", rep)
			}
			var se *ServiceError
			if tt.code != "" && (!errors.As(err, &se) || se.Code != tt.code) {
				t.Fatalf("err %v is not a ServiceError with code %s", err, tt.code)
			}
			if tt.category == "impossible" && (se.NoCandidate == nil || se.NoCandidate.ModelRejects["max_gpu_memory_mb"] != 3) {
				t.Errorf("422 details lost: %+v", se.NoCandidate)
			}
		})
	}
	t.Run("no selector", func(t *testing.T) {
		_, err := New(nc, WithSubject("orch.nobody")).Select(context.Background(), selection.Request{TaskCategory: "code"})
		if !errors.Is(err, ErrNoSelector) {
			t.Fatalf("err = %v, want ErrNoSelector", err)
		}
	})
}

// A ServiceError built by hand (a caller's test fake) reads and unwraps by
// its code.
func TestServiceErrorByCode(t *testing.T) {
	tests := []struct {
		code string
		want error
	}{
		{bus.CodeBadRequest, ErrBadRequest},
		{bus.CodeNotFound, ErrNotFound},
		{bus.CodeUnprocessable, ErrNoCandidate},
		{bus.CodeNotReady, ErrNotReady},
		{"", ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			err := &ServiceError{Code: tt.code, Description: "x"}
			if !errors.Is(err, tt.want) || err.Error() != tt.want.Error()+": x" {
				t.Fatalf("%q: %v, want %v", tt.code, err, tt.want)
			}
		})
	}
}
