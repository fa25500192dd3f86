package bus_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
)

// authCase is a server that takes one way of authenticating, the settings
// that get in and settings that must not.
type authCase struct {
	opts    *server.Options
	good    bus.ConnConfig
	refused []refusal
}

type refusal struct {
	name string
	cfg  bus.ConnConfig
	// want are the errors the connect error must wrap, besides
	// bus.ErrConnect (bus.ErrConnConfig with config set: the settings were
	// refused before dialling).
	want   []error
	config bool
	// names, when set, must appear in the error message.
	names string
}

// writeFile writes data to name in dir, readable by the owner only, and
// returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// nkeyCase: NATS_NKEY, a file with a user nkey seed.
func nkeyCase(t *testing.T) authCase {
	dir := t.TempDir()
	seedFile := func(name string) (string, string) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		seed, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return pub, writeFile(t, dir, name, seed)
	}
	pub, good := seedFile("user.nk")
	_, stranger := seedFile("stranger.nk")
	return authCase{
		opts: &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}},
		good: bus.ConnConfig{NKeyFile: good},
		refused: []refusal{
			{name: "unknown nkey", cfg: bus.ConnConfig{NKeyFile: stranger}, want: []error{nats.ErrAuthorization}},
			{name: "no credentials", want: []error{nats.ErrAuthorization}},
		},
	}
}

// tokenCase: NATS_TOKEN.
func tokenCase(*testing.T) authCase {
	return authCase{
		opts: &server.Options{Authorization: "t0ken-for-test"},
		good: bus.ConnConfig{Token: "t0ken-for-test"},
		refused: []refusal{
			{name: "wrong token", cfg: bus.ConnConfig{Token: "wrong-token"}, want: []error{nats.ErrAuthorization}},
		},
	}
}

// credsCase: NATS_CREDS, a user JWT and seed issued by an account the
// server trusts through its operator (decentralised auth).
func credsCase(t *testing.T) authCase {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	operatorPub, err := operator.PublicKey()
	must(err)
	// account returns a trusted account's key and its JWT.
	account := func() (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		claims, err := jwt.NewAccountClaims(pub).Encode(operator)
		must(err)
		return kp, pub, claims
	}
	// creds writes a creds file of a new user issued by issuer.
	creds := func(issuer nkeys.KeyPair, name string) string {
		kp, err := nkeys.CreateUser()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		seed, err := kp.Seed()
		must(err)
		userJWT, err := jwt.NewUserClaims(pub).Encode(issuer)
		must(err)
		data, err := jwt.FormatUserConfig(userJWT, seed)
		must(err)
		return writeFile(t, dir, name, data)
	}
	trusted, trustedPub, trustedJWT := account()
	// unknown is signed by the operator but never given to the server.
	unknown, _, _ := account()
	resolver := &server.MemAccResolver{}
	must(resolver.Store(trustedPub, trustedJWT))
	missing := filepath.Join(dir, "missing.creds")
	return authCase{
		opts: &server.Options{TrustedKeys: []string{operatorPub}, AccountResolver: resolver},
		good: bus.ConnConfig{CredsFile: creds(trusted, "user.creds")},
		refused: []refusal{
			{name: "user of an unknown account", cfg: bus.ConnConfig{CredsFile: creds(unknown, "stranger.creds")}, want: []error{nats.ErrAuthorization}},
			{name: "missing creds file", cfg: bus.ConnConfig{CredsFile: missing}, want: []error{os.ErrNotExist}, config: true, names: "NATS_CREDS: stat " + missing},
		},
	}
}

// tlsCase: NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY against a server that
// requires a client certificate (verify: true).
func tlsCase(t *testing.T) authCase {
	dir := t.TempDir()
	ca := newTestCA(t)
	caFile := writeFile(t, dir, "ca.pem", ca.certPEM)
	srvCert, srvKey := ca.issue(t, "server", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, "client", x509.ExtKeyUsageClientAuth)
	serverTLS, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: writeFile(t, dir, "server.pem", srvCert),
		KeyFile:  writeFile(t, dir, "server-key.pem", srvKey),
		CaFile:   caFile,
		Verify:   true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A certificate from another CA is no better than none.
	other := newTestCA(t)
	strangerCert, strangerKey := other.issue(t, "stranger", x509.ExtKeyUsageClientAuth)
	return authCase{
		opts: &server.Options{TLS: true, TLSVerify: true, TLSConfig: serverTLS, TLSTimeout: 2},
		good: bus.ConnConfig{
			TLSCA:   caFile,
			TLSCert: writeFile(t, dir, "client.pem", cliCert),
			TLSKey:  writeFile(t, dir, "client-key.pem", cliKey),
		},
		refused: []refusal{
			{name: "no client certificate", cfg: bus.ConnConfig{TLSCA: caFile}},
			{name: "client certificate of another CA", cfg: bus.ConnConfig{
				TLSCA:   caFile,
				TLSCert: writeFile(t, dir, "stranger.pem", strangerCert),
				TLSKey:  writeFile(t, dir, "stranger-key.pem", strangerKey),
			}},
		},
	}
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "orchestrator test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate for 127.0.0.1 and its PEM key.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestConnectAuthMethods(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*testing.T) authCase
	}{
		{"NATS_NKEY seed file", nkeyCase},
		{"NATS_TOKEN", tokenCase},
		{"NATS_CREDS file", credsCase},
		{"NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY with verify", tlsCase},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ac := tc.setup(t)
			ac.opts.Host, ac.opts.Port = "127.0.0.1", -1
			ac.opts.NoSigs, ac.opts.NoLog = true, true
			s, err := server.NewServer(ac.opts)
			if err != nil {
				t.Fatal(err)
			}
			s.Start()
			t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
			if !s.ReadyForConnections(10 * time.Second) {
				t.Fatal("server not ready")
			}
			nop := zerolog.Nop()
			dial := func(cfg bus.ConnConfig) (*nats.Conn, error) {
				cfg.URL, cfg.Logger, cfg.ConnectTimeout = s.ClientURL(), &nop, 5*time.Second
				return bus.Connect(testCtx(t), cfg, "auth-"+tc.name)
			}

			t.Run("gets in", func(t *testing.T) {
				nc, err := dial(ac.good)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				// A round trip proves the server took the connection.
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				if ac.opts.TLS {
					if _, err := nc.TLSConnectionState(); err != nil {
						t.Fatalf("not on TLS: %v", err)
					}
				}
			})
			for _, r := range ac.refused {
				t.Run(r.name+" is refused", func(t *testing.T) {
					nc, err := dial(r.cfg)
					if err == nil {
						nc.Close()
						t.Fatal("connected")
					}
					t.Logf("error: %v", err)
					base := bus.ErrConnect
					if r.config {
						base = bus.ErrConnConfig
					}
					for _, want := range append([]error{base}, r.want...) {
						if !errors.Is(err, want) {
							t.Errorf("err = %v, want it to wrap %v", err, want)
						}
					}
					if r.names != "" && !strings.Contains(err.Error(), r.names) {
						t.Errorf("err = %v, want it to name %s", err, r.names)
					}
				})
			}
		})
	}
}
